"""Counts item and pair co-occurrences of an order history with Spark, for Tandem's training.

Reads order lines, one row per line of an order: a CSV file (or directory, or glob) with a
header row, or a Parquet table (--format parquet), with the order id in the column named by
--order-col (default order_id), the item id in --item-col (default item_id) and, when the input
has it, the line's number within its order in --line-col (default line_no; any integers that
order an order's lines). The lines are taken as they are: clean them first as `tandem import`
does (no cancelled orders, no lines with a quantity or price at or below zero, no postage and
other non-product codes). A basket is the distinct items of one order, so a line repeated
within an order counts once.

Line order: an order's items are taken in the order of their first lines (later repeats
dropped), and two items are on adjacent lines when no other item's first line comes between
theirs, as Tandem counts them in process. Without a line-number column, the lines' order in
the input is their order (as `tandem import` takes a file's rows): right when each order's
lines sit in one file in line order, as an export writes them, and meaningless for a table
written in no particular order; give such a table a line-number column.

Writes the counts directory --out (replacing the tables in it) that src/offline/counts_file.rs
describes, each table a directory of part files:
  items.parquet  item_id (string), baskets (int64): the baskets holding each item;
  pairs.parquet  item_id, other_item_id (strings), baskets (int64): the baskets holding both,
                 one row per unordered pair sharing a basket (item_id < other_item_id);
                 adjacent_baskets (int64): how many of those hold the two on adjacent lines.
Tandem trains from it with `tandem train --counts DIR`.

Pairs come from a self-join of the baskets on the order id, keeping a.item < b.item, then a
group by pair: the standard way, which scales with the cluster. Each basket item carries its
position (a row number over the order's first lines), so adjacency is a filtered count in the
same aggregate. Like any pair counting, its
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

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", required=True, help="order lines: a CSV or Parquet path")
    parser.add_argument("--out", required=True, help="the counts directory to write")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--order-col", default="order_id")
    parser.add_argument("--item-col", default="item_id")
    parser.add_argument(
        "--line-col",
        default="line_no",
        help="the line's number within its order; when the input lacks it, input order",
    )
    parser.add_argument("--master", help="e.g. local[2]; default: spark-submit's or Spark's")
    return parser.parse_args()


def count(lines):
    """(items, pairs) DataFrames of the interchange from (order_id, item_id, line) lines."""
    firsts = (
        lines.where(F.col("order_id").isNotNull() & F.col("item_id").isNotNull())
        .groupBy("order_id", "item_id")
        .agg(F.min("line").alias("first_line"))
    )
    # Ties (a line-number column that repeats within an order) are broken by item id, so
    # every run numbers a basket alike; lines without a number go last.
    in_line_order = Window.partitionBy("order_id").orderBy(
        F.col("first_line").asc_nulls_last(), F.col("item_id")
    )
    baskets = firsts.withColumn("pos", F.row_number().over(in_line_order))
    items = baskets.groupBy("item_id").agg(F.count("*").alias("baskets"))
    a, b = baskets.alias("a"), baskets.alias("b")
    same_basket = F.col("a.order_id") == F.col("b.order_id")
    each_pair_once = F.col("a.item_id") < F.col("b.item_id")
    adjacent = F.abs(F.col("a.pos") - F.col("b.pos")) == 1
    pairs = (
        a.join(b, same_basket & each_pair_once)
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("other_item_id"))
        .agg(
            F.count("*").alias("baskets"),
            F.count(F.when(adjacent, True)).alias("adjacent_baskets"),
        )
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
    if args.line_col in raw.columns:
        line = F.col(args.line_col).cast("long")
        print(f"count_cooccurrences: line order from column {args.line_col}")
    else:
        # Taken before any shuffle, so it increases with each file's row order.
        line = F.monotonically_increasing_id()
        print(f"count_cooccurrences: no column {args.line_col}; line order is input order")
    lines = raw.select(
        F.col(args.order_col).cast("string").alias("order_id"),
        F.col(args.item_col).cast("string").alias("item_id"),
        line.alias("line"),
    )

    items, pairs = count(lines)
    out = args.out.rstrip("/")
    items.write.mode("overwrite").parquet(out + "/items.parquet")
    pairs.write.mode("overwrite").parquet(out + "/pairs.parquet")
    print(f"count_cooccurrences: wrote {out}/items.parquet and {out}/pairs.parquet")
    spark.stop()


if __name__ == "__main__":
    main()
