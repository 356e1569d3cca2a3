"""Writes a bench script's machine-readable results (see scripts/lib/results.sh).

Usage: write-results.py NAME RECORDS.jsonl OUTPUT.json DATA_FILE GIT_COMMIT TREE ARGS...
DATA_FILE may be empty; TREE is "clean" or "dirty". RESULTS_SCRIPT names the script when its
name is not NAME.
"""
import datetime
import hashlib
import json
import os
import sys

name, records_path, output, data_file, commit, tree = sys.argv[1:7]
arguments = sys.argv[7:]
with open(records_path) as f:
    records = [json.loads(line) for line in f if line.strip()]
data = None
if data_file:
    digest = hashlib.sha256()
    with open(data_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    data = {"path": data_file, "sha256": digest.hexdigest()}
summary = {
    "bench": name,
    "command": " ".join(["scripts/" + os.environ.get("RESULTS_SCRIPT", name)] + arguments),
    "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_commit": commit or None,
    "git_tree": tree,
    "cpus": os.cpu_count(),
    "data": data,
    "results": records,
}
tmp = output + ".tmp"
with open(tmp, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
os.replace(tmp, output)
