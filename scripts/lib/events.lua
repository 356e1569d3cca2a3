-- wrk script: POST /events with bodies of 50 impression events (random synthetic items, users
-- and sessions), prepared at start so the generator spends its time sending. DELAY_MS (if set)
-- paces each connection: one body per DELAY_MS milliseconds at most.
local items = tonumber(os.getenv("ITEMS") or "2000")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local bodies = {}

function init(args)
  math.randomseed(7)
  for b = 1, 64 do
    local events = {}
    for i = 1, 50 do
      events[i] = string.format(
        '{"kind":"impression","item_id":"S%07d","user":"u%d","session":"s%d","touchpoint":"checkout"}',
        math.random(0, items - 1), math.random(1, 100000), math.random(1, 100000))
    end
    bodies[b] = "[" .. table.concat(events, ",") .. "]"
  end
end

function request()
  local body = bodies[math.random(1, #bodies)]
  return wrk.format("POST", "/events", { ["Content-Type"] = "application/json" }, body)
end

function delay()
  return delay_ms
end
