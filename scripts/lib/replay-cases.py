"""Replays `tandem evaluate --cases` test cases against a running server and compares its
lists with the ones `evaluate`'s serving row made from the same cases.

Each case is sent as `POST /recommendations` with the cart alone, and again with the
shopper's earlier purchases when it has any (cases without purchases count the same answer
for both figures, as `evaluate` does). No user or session id is sent, so no capping applies.

Usage: replay-cases.py CASES.jsonl PORT TOUCHPOINT K
Prints one JSON object: the hit rates through HTTP, the ones `evaluate` recorded, and how many
cases the two disagree on.
"""
import http.client
import json
import sys

path, port, touchpoint, k = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def listed(case, purchased):
    body = {"cart": case["cart"], "k": k, "touchpoint": touchpoint}
    if purchased:
        body["purchased"] = case["purchased"]
    connection.request("POST", "/recommendations", body=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        sys.exit(f"replay-cases: {response.status} for {body}: {answer[:300]!r}")
    return case["hidden"] in [item["item_id"] for item in json.loads(answer)["items"]]


cases = 0
hits = {"alone": 0, "with_purchased": 0}
recorded = {"alone": 0, "with_purchased": 0}
disagree = {"alone": 0, "with_purchased": 0}
with_purchases = 0
with open(path) as f:
    for line in f:
        case = json.loads(line)
        cases += 1
        alone = listed(case, False)
        with_p = listed(case, True) if case["purchased"] else alone
        with_purchases += bool(case["purchased"])
        for name, served, offline in (("alone", alone, case["listed"]),
                                      ("with_purchased", with_p, case["listed_with_purchased"])):
            hits[name] += served
            recorded[name] += offline
            disagree[name] += served != offline

print(json.dumps({
    "cases": cases,
    "cases_with_purchases": with_purchases,
    "http_hit_rate": {n: hits[n] / max(cases, 1) for n in hits},
    "evaluate_hit_rate": {n: recorded[n] / max(cases, 1) for n in recorded},
    "cases_that_disagree": disagree,
}))
