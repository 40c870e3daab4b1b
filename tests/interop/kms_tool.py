"""AWS KMS helper for tests/kms.rs, against the moto server (boto3, real API calls).

Usage:
  kms_tool.py create ALIAS              -> prints {"arn": ..., "alias": "alias/ALIAS"}
  kms_tool.py disable ARN
  kms_tool.py read SEGMENT...           -> one JSON line per segment: path, rows, bodies
  kms_tool.py wrong-context SEGMENT     -> exit 0 iff KMS refuses the DEK without the context

The endpoint comes from AWS_ENDPOINT_URL, region and credentials from the environment.

`read` opens sealed segments with pyarrow's standard CryptoFactory and a KMS client that
rebuilds sealtrail's encryption context from nothing but what pyarrow hands it (the wrapped
key and the master key id): {"sealtrail:purpose": "parquet-segment-dek"}.
"""

import base64
import json
import sys

import boto3

CONTEXT = {"sealtrail:purpose": "parquet-segment-dek"}


def kms():
    return boto3.client("kms")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "create":
        arn = kms().create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
        kms().create_alias(AliasName="alias/" + args[0], TargetKeyId=arn)
        print(json.dumps({"arn": arn, "alias": "alias/" + args[0]}))
    elif cmd == "disable":
        kms().disable_key(KeyId=args[0])
    elif cmd == "read":
        import pyarrow.parquet as pq
        import pyarrow.parquet.encryption as pe

        class AwsKms(pe.KmsClient):
            def __init__(self, config):
                pe.KmsClient.__init__(self)
                self.client = kms()

            def wrap_key(self, key_bytes, master_key_identifier):
                raise NotImplementedError("read-only")

            def unwrap_key(self, wrapped_key, master_key_identifier):
                return self.client.decrypt(
                    CiphertextBlob=base64.b64decode(wrapped_key),
                    KeyId=master_key_identifier,
                    EncryptionContext=CONTEXT,
                )["Plaintext"]

        factory = pe.CryptoFactory(lambda config: AwsKms(config))
        props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
        for path in args:
            table = pq.ParquetFile(path, decryption_properties=props).read()
            print(json.dumps({"path": path, "rows": table.num_rows, "bodies": table.column("body").to_pylist()}))
    elif cmd == "encrypt-env":
        # As the Lambda console's encryption helper does: the variable's text encrypted under
        # the key, with the function name as encryption context (or none: the CLI's way).
        key, text, function = args[0], args[1], (args[2] if len(args) > 2 else "")
        extra = {"EncryptionContext": {"LambdaFunctionName": function}} if function else {}
        blob = kms().encrypt(KeyId=key, Plaintext=text.encode(), **extra)["CiphertextBlob"]
        print(base64.b64encode(blob).decode())
    elif cmd == "wrong-context":
        meta = key_metadata(args[0])
        try:
            kms().decrypt(CiphertextBlob=base64.b64decode(meta["wrappedDEK"]), KeyId=meta["masterKeyID"])
        except kms().exceptions.InvalidCiphertextException:
            return 0
        print("decrypted without the encryption context", file=sys.stderr)
        return 1
    else:
        raise SystemExit("unknown command " + cmd)
    return 0


def key_metadata(path):
    """The PKMT1 JSON stored in plain text in the encrypted-footer file's crypto metadata."""
    data = open(path, "rb").read()
    start = data.index(b'{"keyMaterialType"')
    depth = 0
    for i in range(start, len(data)):
        depth += {ord("{"): 1, ord("}"): -1}.get(data[i], 0)
        if depth == 0:
            return json.loads(data[start : i + 1])
    raise ValueError("no key metadata in " + path)


if __name__ == "__main__":
    sys.exit(main())
