"""Reads sealed segments with Spark (PySpark in local mode) through parquet-java's
PropertiesDrivenCryptoFactory and sealtrail's KMS client (contrib/spark), the way a cluster job
would, and prints what came back.

Usage:
    spark_read.py --jars A.jar,B.jar --keyring DIR [--read LABEL PATH]... [--write LABEL PATH]...

--read LABEL PATH   spark.read.option("recursiveFileLookup", "true").parquet(PATH)
--write LABEL PATH  writes one row with parquet.encryption.uniform.key = "default#1", which the
                    read-only client must refuse

Prints one JSON object per case, in order: {"label", "rows": [...]} with every row as stored
(maps as objects, timestamps as long nanoseconds: spark.sql.legacy.parquet.nanosAsLong), or
{"label", "error": "<the Java exception chain, one message a line>"}.
"""

import argparse
import json
import os
import sys

from pyspark.sql import SparkSession


def session(jars, keyring):
    # The JVM that PySpark starts inherits this: bind to loopback, not the host's address.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return (
        SparkSession.builder.master("local[2]")
        .appName("sealtrail-spark-interop")
        .config("spark.jars", jars)
        .config("spark.hadoop.parquet.crypto.factory.class",
                "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory")
        .config("spark.hadoop.parquet.encryption.kms.client.class", "sealtrail.spark.SealtrailKmsClient")
        .config("spark.hadoop.sealtrail.keyring.dir", keyring)
        # Segments store INT64 TIMESTAMP(NANOS); Spark has no nanosecond timestamp type.
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        # Only loopback: the test machine has no other network.
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )


def java_messages(e):
    """The messages of the Java exception chain behind a PySpark error, else str(e)."""
    lines = []
    j = getattr(e, "java_exception", None) or getattr(e, "_origin", None)
    seen = 0
    while j is not None and seen < 20:
        # Spark puts the executor's stack trace into its messages: keep their first line.
        message = (j.getMessage() or "").split("\n", 1)[0]
        lines.append(f"{j.getClass().getName()}: {message}")
        j = j.getCause()
        seen += 1
    if not lines:
        lines.append(str(e))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jars", required=True)
    ap.add_argument("--keyring", required=True)
    ap.add_argument("--read", nargs=2, action="append", default=[], metavar=("LABEL", "PATH"))
    ap.add_argument("--write", nargs=2, action="append", default=[], metavar=("LABEL", "PATH"))
    args = ap.parse_args()

    spark = session(args.jars, args.keyring)
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for label, path in args.read:
            try:
                df = spark.read.option("recursiveFileLookup", "true").parquet(path)
                rows = [r.asDict(recursive=True) for r in df.collect()]
                print(json.dumps({"label": label, "columns": df.columns, "rows": rows}), flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported, by label
                print(json.dumps({"label": label, "error": java_messages(e)}), flush=True)
        for label, path in args.write:
            try:
                df = spark.createDataFrame([("x",)], ["body"])
                (df.write.mode("overwrite")
                   .option("parquet.encryption.uniform.key", "default#1")
                   .parquet(path))
                print(json.dumps({"label": label, "rows": []}), flush=True)
            except Exception as e:  # noqa: BLE001
                print(json.dumps({"label": label, "error": java_messages(e)}), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
