"""AWS S3 helper for tests/s3.rs, against the moto server (boto3, real API calls).

Usage:
  s3_tool.py mkbucket BUCKET
  s3_tool.py list BUCKET PREFIX        -> one JSON line per object: key, size, sse, kms_key
  s3_tool.py fetch BUCKET DIR KEY...   -> downloads each object to DIR/<basename>

The endpoint comes from AWS_ENDPOINT_URL, region and credentials from the environment.
Downloaded segments are read with pyarrow by kms_tool.py (`read`).
"""

import json
import os
import sys

import boto3


def s3():
    return boto3.client("s3")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "mkbucket":
        region = os.environ.get("AWS_REGION", "us-east-1")
        s3().create_bucket(Bucket=args[0], CreateBucketConfiguration={"LocationConstraint": region})
    elif cmd == "list":
        bucket, prefix = args
        paginator = s3().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                head = s3().head_object(Bucket=bucket, Key=o["Key"])
                print(json.dumps({
                    "key": o["Key"],
                    "size": o["Size"],
                    "sse": head.get("ServerSideEncryption"),
                    "kms_key": head.get("SSEKMSKeyId"),
                }))
    elif cmd == "fetch":
        bucket, out, keys = args[0], args[1], args[2:]
        for k in keys:
            s3().download_file(bucket, k, os.path.join(out, os.path.basename(k)))
    else:
        raise SystemExit("unknown command " + cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
