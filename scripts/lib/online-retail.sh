# Sourced by the scripts that read the full Online Retail file: where it is and where to get it.
#
# The file is the UCI Machine Learning Repository data set 352 "Online Retail" (Daqing Chen,
# 2015; https://doi.org/10.24432/C5BW33), licensed CC BY 4.0: 541,909 line items of a UK
# online gift shop, 2010-12-01 to 2011-12-09, as a gzipped CSV with the header
# InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country.
# It is not in this repository. Scripts read it from, in order:
#   1. their --orders FILE option;
#   2. the ONLINE_RETAIL environment variable;
#   3. ../shared/data/online_retail/online_retail.csv.gz, a path beside the repository.
# The copy the published figures come from has sha256
# 737745256ddb4410bfe4e29f2dcb72329b7486e584837f1e84f9a07416cf7d45 (the per-day CSV export
# of the book "Spark: The Definitive Guide", joined: ISO dates, customer ids as floats).
#
# A script sets invoked_from="$PWD" before it changes to the project root, so a relative
# --orders or ONLINE_RETAIL path is read from where the script was started.

ONLINE_RETAIL_DEFAULT=../shared/data/online_retail/online_retail.csv.gz

# online_retail_file [GIVEN]: prints the path to read (GIVEN, else $ONLINE_RETAIL, else the
# default), or fails with where to get the file when it does not exist.
online_retail_file() {
  local given="${1:-${ONLINE_RETAIL:-}}" path
  if [ -z "$given" ]; then
    path="$ONLINE_RETAIL_DEFAULT"
  elif [[ "$given" = /* ]]; then
    path="$given"
  else
    path="${invoked_from:-$PWD}/$given"
  fi
  if [ ! -f "$path" ]; then
    log "FAILED: the Online Retail file $path is missing."
    log "  It is the UCI Machine Learning Repository data set 352 \"Online Retail\" (Daqing Chen, 2015),"
    log "  CC BY 4.0: https://doi.org/10.24432/C5BW33 . Save it as a gzipped CSV with the header"
    log "  InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    log "  at $ONLINE_RETAIL_DEFAULT (beside the repository), or pass --orders FILE or set ONLINE_RETAIL."
    exit 1
  fi
  echo "$path"
}
