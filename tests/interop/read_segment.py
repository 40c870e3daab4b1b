"""Reads sealed segments with pyarrow's standard CryptoFactory and a five-line KMS client.

Usage: read_segment.py KEYRING_DIR SEGMENT...
Prints one JSON object per segment: {"path", "rows", "bodies" (logs) or "names" (spans)}.

The KMS client unwraps sealtrail's wrapped data keys exactly as DESIGN.md specifies:
wrappedDEK = base64(nonce12 || AES-256-GCM-SIV(KEK, nonce, DEK, aad = masterKeyID)),
masterKeyID = "<key name>#<version>", the KEK read from <keyring>/<name>.json.
"""

import base64
import json
import os
import sys

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

KEYRING = sys.argv[1]


def kek(master_key_id):
    name, version = master_key_id.rsplit("#", 1)
    with open(os.path.join(KEYRING, name + ".json")) as f:
        key = json.load(f)
    for v in key["versions"]:
        if v["version"] == int(version):
            return base64.b64decode(v["material"].removeprefix("base64:"))
    raise KeyError(master_key_id)


class SealtrailKms(pe.KmsClient):
    def __init__(self, config):
        pe.KmsClient.__init__(self)

    def wrap_key(self, key_bytes, master_key_identifier):
        raise NotImplementedError("read-only")

    def unwrap_key(self, wrapped_key, master_key_identifier):
        raw = base64.b64decode(wrapped_key)
        return AESGCMSIV(kek(master_key_identifier)).decrypt(raw[:12], raw[12:], master_key_identifier.encode())


factory = pe.CryptoFactory(lambda config: SealtrailKms(config))
props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
for path in sys.argv[2:]:
    table = pq.ParquetFile(path, decryption_properties=props).read()
    col = "body" if "body" in table.column_names else "name"
    print(json.dumps({"path": path, "rows": table.num_rows, col + "s": table.column(col).to_pylist()}))
