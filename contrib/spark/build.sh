#!/usr/bin/env bash
# Builds sealtrail-spark.jar: the read-only parquet-java KMS client that lets Spark read sealed
# segments (README "Spark"). Needs only a JDK (javac, jar; 17 or newer) and two sets of jars:
#   - Spark's jars, for parquet-hadoop, hadoop-client-api and Jackson: $SPARK_JARS, else
#     $SPARK_HOME/jars, else the jars/ folder of the pyspark package that $PYTHON (default
#     python3) imports;
#   - Bouncy Castle (AES-GCM-SIV): $BCPROV_JAR, else /usr/share/java/bcprov.jar (Debian's
#     libbcprov-java).
# Neither is bundled: at run time Spark has its own jars, and bcprov.jar goes beside ours in
# spark.jars.
#
# Usage: contrib/spark/build.sh [OUTPUT_JAR]   (default: contrib/spark/target/sealtrail-spark.jar)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/target/sealtrail-spark.jar}"

die() { echo "contrib/spark/build.sh: $*" >&2; exit 2; }

command -v javac >/dev/null || die "javac not found: install a JDK 17 or newer (Debian: openjdk-17-jdk-headless)"
command -v jar >/dev/null || die "jar not found: install a JDK 17 or newer (Debian: openjdk-17-jdk-headless)"

jars="${SPARK_JARS:-}"
if [ -z "$jars" ] && [ -n "${SPARK_HOME:-}" ]; then
  jars="$SPARK_HOME/jars"
fi
if [ -z "$jars" ]; then
  py="${PYTHON:-python3}"
  jars="$("$py" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))' 2>/dev/null)" \
    || die "no Spark jars: set SPARK_JARS or SPARK_HOME, or PYTHON to an interpreter with pyspark installed"
fi
ls "$jars"/parquet-hadoop-*.jar >/dev/null 2>&1 || die "no parquet-hadoop jar in $jars (set SPARK_JARS to Spark's jars folder)"

bcprov="${BCPROV_JAR:-/usr/share/java/bcprov.jar}"
[ -f "$bcprov" ] || die "Bouncy Castle not found at $bcprov: install libbcprov-java or set BCPROV_JAR"

# Only the jars the client compiles against: a classpath of all ~280 Spark jars makes javac
# several times slower.
cp=""
for j in parquet-hadoop parquet-column parquet-common hadoop-client-api jackson-core jackson-databind jackson-annotations; do
  found="$(ls "$jars"/$j-[0-9]*.jar 2>/dev/null | head -n 1)"
  [ -n "$found" ] || die "no $j jar in $jars"
  cp="$cp$found:"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/classes" "$(dirname "$out")"
javac --release 17 -Xlint:all,-options,-path -Werror -d "$work/classes" \
  -cp "$cp$bcprov" $(find "$here/src" -name '*.java' | sort)
jar --create --file "$out.tmp" -C "$work/classes" .
mv "$out.tmp" "$out"
echo "$out"
