-- wrk script: requests the paths listed in PATHS (one per line) in random order, each
-- /recommendations request from one of 200,000 shopper sessions (so capping does real work
-- without one shopper's fatigue cap emptying the lists), and reports p50/p90/p99/p99.9 latency
-- and the request rate in a form scripts can read.
--
-- The requests are formatted once, in init: building each one in request() (a random draw, a
-- string search, a concatenation and wrk.format per request) cost the generator about a tenth
-- of its time per request, more for the long cart paths than for /healthz, and the generator
-- shares the server's two cores.
local requests = {}
local next_request = 0

function init(args)
  local paths = {}
  for line in io.lines(os.getenv("PATHS")) do
    paths[#paths + 1] = line
  end
  math.randomseed(11)
  local recommendations = false
  for _, path in ipairs(paths) do
    if string.find(path, "^/recommendations") then
      recommendations = true
    end
  end
  if recommendations then
    -- One request per session, each with a random path: every session is asked about as
    -- often as when the session was drawn per request.
    -- SESSION_OFFSET shifts the session ids, so a later run can meet new shoppers rather
    -- than the ones an earlier run left capping state for.
    local offset = tonumber(os.getenv("SESSION_OFFSET") or "0")
    for session = 1, 200000 do
      local path = paths[math.random(1, #paths)]
      if string.find(path, "^/recommendations") then
        path = path .. "&session=" .. (offset + session)
      end
      requests[#requests + 1] = wrk.format("GET", path)
    end
  else
    for _, path in ipairs(paths) do
      requests[#requests + 1] = wrk.format("GET", path)
    end
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format("RESULT rps=%.0f requests=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests / seconds, summary.requests,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
