-- wrk script: requests the paths listed in PATHS (one per line) in random order, each
-- /recommendations request from one of 200,000 shopper sessions (so capping does real work
-- without one shopper's fatigue cap emptying the lists), and reports p50/p90/p99/p99.9 latency
-- and the request rate in a form scripts can read.
local paths = {}

function init(args)
  for line in io.lines(os.getenv("PATHS")) do
    paths[#paths + 1] = line
  end
  math.randomseed(11)
end

function request()
  local path = paths[math.random(1, #paths)]
  if string.find(path, "^/recommendations") then
    path = path .. "&session=" .. math.random(1, 200000)
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
