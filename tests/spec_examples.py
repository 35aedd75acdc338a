"""The spec's two request bodies, verbatim but for the store location (a JSON string to fill
in with ``%``), shared by the model, JSON and HTTP tests."""

SPEC_BACKUP = """{
    "name":"test",
    "storeLocation":%s,
    "content":{
        "commonData": true,
        "compression":true,
        "projects":[{
            "projectRegex":"*"
        }]
    }
}"""
SPEC_RESTORE = """{
    "name":"test1-restore",
    "storeLocation":%s,
    "type":"DATA_RESTORE",
    "content":{
        "commonData": true,
        "compression":true,
        "projects":[{
            "projectRegex":"*"
        }]
    }
}"""
