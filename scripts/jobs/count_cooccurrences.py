"""Counts item and pair co-occurrences of an order history with Spark, for Tandem's training.

Reads order lines, one row per line of an order: a CSV file (or directory, or glob) with a
header row, or a Parquet table (--format parquet), with the order id in the column named by
--order-col (default order_id) and the item id in --item-col (default item_id). The lines are
taken as they are: clean them first as `tandem import` does (no cancelled orders, no lines with
a quantity or price at or below zero, no postage and other non-product codes). A basket is the
distinct items of one order, so a line repeated within an order counts once.

Writes the counts directory --out (replacing the tables in it) that src/offline/counts_file.rs
describes, each table a directory of part files:
  items.parquet  item_id (string), baskets (int64): the baskets holding each item;
  pairs.parquet  item_id, other_item_id (strings), baskets (int64): the baskets holding both,
                 one row per unordered pair sharing a basket (item_id < other_item_id).
Tandem trains from it with `tandem train --counts DIR`.

Pairs come from a self-join of the baskets on the order id, keeping a.item < b.item, then a
group by pair: the standard way, which scales with the cluster. Like any pair counting, its
work is quadratic in the size of each basket (a basket of n items makes n(n-1)/2 pairs), so a
few very large baskets (a wholesaler's restock, a bot) can dominate the run; cap or drop them
upstream if that matters.

On a cluster (the master and resources come from spark-submit, as usual):
  spark-submit scripts/jobs/count_cooccurrences.py \
      --lines s3://bucket/order_lines/ --format parquet --out s3://bucket/tandem/counts/
Locally (`pip install pyspark` and a Java 17 or later):
  python3 scripts/jobs/count_cooccurrences.py --master 'local[2]' \
      --lines lines.csv --out counts/
"""

import argparse

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", required=True, help="order lines: a CSV or Parquet path")
    parser.add_argument("--out", required=True, help="the counts directory to write")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--order-col", default="order_id")
    parser.add_argument("--item-col", default="item_id")
    parser.add_argument("--master", help="e.g. local[2]; default: spark-submit's or Spark's")
    return parser.parse_args()


def count(lines):
    """(items, pairs) DataFrames of the interchange from (order_id, item_id) lines."""
    baskets = lines.where(
        F.col("order_id").isNotNull() & F.col("item_id").isNotNull()
    ).distinct()
    items = baskets.groupBy("item_id").agg(F.count("*").alias("baskets"))
    a, b = baskets.alias("a"), baskets.alias("b")
    same_basket = F.col("a.order_id") == F.col("b.order_id")
    each_pair_once = F.col("a.item_id") < F.col("b.item_id")
    pairs = (
        a.join(b, same_basket & each_pair_once)
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("other_item_id"))
        .agg(F.count("*").alias("baskets"))
    )
    return items, pairs


def main():
    args = parse_args()
    # No console progress bars: a batch job's log stays readable.
    builder = SparkSession.builder.appName("tandem-count-cooccurrences").config(
        "spark.ui.showConsoleProgress", "false"
    )
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")

    if args.format == "csv":
        # Every column as a string: ids such as 00123 keep their zeros.
        raw = spark.read.option("header", True).csv(args.lines)
    else:
        raw = spark.read.parquet(args.lines)
    lines = raw.select(
        F.col(args.order_col).cast("string").alias("order_id"),
        F.col(args.item_col).cast("string").alias("item_id"),
    )

    items, pairs = count(lines)
    out = args.out.rstrip("/")
    items.write.mode("overwrite").parquet(out + "/items.parquet")
    pairs.write.mode("overwrite").parquet(out + "/pairs.parquet")
    print(f"count_cooccurrences: wrote {out}/items.parquet and {out}/pairs.parquet")
    spark.stop()


if __name__ == "__main__":
    main()
