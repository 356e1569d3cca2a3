# Sourced by scripts: ensure_spark makes sure the Spark job in scripts/jobs can run locally: a
# Java 17 or later (`java` on PATH, JAVA_HOME exported) and PySpark in a virtualenv under
# target/spark-venv, whose python it exports as TANDEM_SPARK_PYTHON. It installs Debian's
# openjdk-17-jre-headless when there is no such Java and it runs as root, and PySpark from PyPI
# (about 300 MB, once: later runs only check). It fails loudly when it cannot: the Spark test
# never skips.

TANDEM_PYSPARK_VERSION="${TANDEM_PYSPARK_VERSION:-4.1.4}"

# The major version of a java binary (default: the one on PATH; 8 for "1.8.0_x"), or nothing.
java_major() {
  local version
  version="$("${1:-java}" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)"
  case "$version" in
    1.*) version="${version#1.}" ;;
  esac
  echo "${version%%[.+-]*}"
}

ensure_java() {
  local major=""
  command -v java >/dev/null 2>&1 && major="$(java_major)"
  if [ "${major:-0}" -lt 17 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "no Java 17 or later on PATH (found: ${major:-none}); installing Debian's openjdk-17-jre-headless"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless) >&2 \
      || { log "FAILED: apt-get install openjdk-17-jre-headless"; exit 1; }
    # Debian's alternatives may still point at an older java: put 17's first.
    local jdk
    jdk="$(ls -d /usr/lib/jvm/java-17-openjdk-* 2>/dev/null | head -n 1)"
    [ -n "$jdk" ] && export PATH="$jdk/bin:$PATH"
    major="$(java_major)"
  fi
  if [ "${major:-0}" -lt 17 ]; then
    log "FAILED: Spark needs Java 17 or later on PATH (found: ${major:-none}); install a JDK or JRE 17+"
    exit 1
  fi
  # Spark runs $JAVA_HOME/bin/java when JAVA_HOME is set: derive it from the java on PATH when
  # it is unset or names no Java 17 or later.
  local home_major=0
  [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ] && home_major="$(java_major "$JAVA_HOME/bin/java")"
  if [ "${home_major:-0}" -lt 17 ]; then
    JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
    export JAVA_HOME
  fi
}

ensure_pyspark() {
  local venv="$PWD/target/spark-venv"
  local python="$venv/bin/python"
  local check="import pyspark, sys; sys.exit(pyspark.__version__ != '$TANDEM_PYSPARK_VERSION')"
  if ! "$python" -c "$check" 2>/dev/null; then
    log "installing PySpark $TANDEM_PYSPARK_VERSION into $venv (about 300 MB, once)"
    if [ ! -x "$python" ]; then
      python3 -m venv "$venv" >&2 || { log "FAILED: python3 -m venv $venv"; exit 1; }
    fi
    "$python" -m pip install -q "pyspark==$TANDEM_PYSPARK_VERSION" >&2 \
      || { log "FAILED: pip install pyspark==$TANDEM_PYSPARK_VERSION into $venv"; exit 1; }
    "$python" -c "$check" || { log "FAILED: pyspark $TANDEM_PYSPARK_VERSION is not importable by $python"; exit 1; }
  fi
  export TANDEM_SPARK_PYTHON="$python"
}

ensure_spark() {
  ensure_java
  ensure_pyspark
  log "Spark: Java $(java_major "$JAVA_HOME/bin/java") ($JAVA_HOME), PySpark $TANDEM_PYSPARK_VERSION ($TANDEM_SPARK_PYTHON)"
}
