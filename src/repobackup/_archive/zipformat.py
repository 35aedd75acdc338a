"""The zip structures both zip modules share: signatures, record layouts and flags.

Only stored members with ZIP64 extras are written; the reader accepts what the writer makes.
"""

from __future__ import annotations

import stat
import struct

ZIP64_LIMIT = 0xFFFFFFFF
ZIP64_COUNT = 0xFFFF
STORED = 0
FLAG_ENCRYPTED = 0x1
FLAG_DESCRIPTOR = 0x8
FLAG_UTF8 = 0x800
VERSION_ZIP64 = 45
VERSION_DEFAULT = 20
MADE_BY = (3 << 8) | VERSION_ZIP64  # Unix, so that unzip honours the file modes
FILE_MODE = (stat.S_IFREG | 0o644) << 16

LOCAL = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIG = 0x04034B50
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
CENTRAL_SIG = 0x02014B50
END = struct.Struct("<IHHHHIIH")
END_SIG = 0x06054B50
END64 = struct.Struct("<IQHHIIQQQQ")
END64_SIG = 0x06064B50
LOCATOR = struct.Struct("<IIQI")
LOCATOR_SIG = 0x07064B50
EXTRA = struct.Struct("<HH")
ZIP64_EXTRA = 0x0001
