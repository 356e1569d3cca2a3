"""Writes GET /recommendations URL paths built from real held-out baskets of the Online
Retail file: for each basket at or after the cut-off, a cart of 1 to 20 of its items (sizes
vary as real carts do). The load script adds a session id per request.

Usage: held-out-carts.py ORDERS.csv.gz CUTOFF COUNT > paths.txt

ORDERS is the UCI Machine Learning Repository data set 352 "Online Retail" (Daqing Chen, 2015),
licensed CC BY 4.0; the calling scripts pass the file they were given (--orders FILE, else
$ONLINE_RETAIL, else ../shared/data/online_retail/online_retail.csv.gz; see online-retail.sh).
"""
import csv
import gzip
import random
import sys

NON_PRODUCTS = {"POST", "DOT", "M", "C2", "D", "S", "B", "AMAZONFEE", "BANK CHARGES", "CRUK", "PADS"}

path, cutoff, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
baskets = {}
with gzip.open(path, "rt", newline="") as f:
    for row in csv.DictReader(f):
        invoice = row["InvoiceNo"]
        if invoice.startswith("C") or row["InvoiceDate"] < cutoff:
            continue
        code = row["StockCode"].strip()
        if code.upper() in NON_PRODUCTS or float(row["Quantity"] or 0) <= 0:
            continue
        customer = (row["CustomerID"] or "").split(".")[0]
        items, _ = baskets.setdefault(invoice, ([], customer))
        if code not in items:
            items.append(code)

rng = random.Random(7)
invoices = [i for i, (items, _) in baskets.items() if items]
for _ in range(count):
    invoice = rng.choice(invoices)
    items, customer = baskets[invoice]
    size = min(len(items), rng.choice([1, 1, 2, 3, 3, 5, 8, 12, 20]))
    cart = ",".join(rng.sample(items, size))
    print(f"/recommendations?k=10&cart={cart}")
