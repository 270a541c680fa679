"""The cache-index record kinds the registry code keeps, in a module of their own so that
a local-only FROM lookup can read them without importing the HTTP client (httpx costs
~100 ms of start-up)."""

BLOB_SOURCE = "registry-blob"       # blob digest -> {"repos": ["domain/path", ...]}
INDEX_CHOICE = "registry-index"     # "<index digest> <platform>" -> {"manifest": digest}
PULLED_TAG = "registry-tag"         # normalized tag -> {"manifest": digest} as last pulled
