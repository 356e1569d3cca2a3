-- wrk script: GET /recommendations with random carts of 1 to 5 synthetic item ids (S0000000…).
local items = tonumber(os.getenv("ITEMS") or "100000")
local thread_seed = 0

function setup(thread)
  thread_seed = thread_seed + 1
  thread:set("seed", thread_seed)
end

function init(args)
  math.randomseed(42 + (seed or 0))
end

function request()
  local size = math.random(1, 5)
  local ids = {}
  for i = 1, size do
    ids[i] = string.format("S%07d", math.random(0, items - 1))
  end
  return wrk.format("GET", "/recommendations?k=10&cart=" .. table.concat(ids, ","))
end
