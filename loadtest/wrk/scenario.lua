-- One benchmark scenario for wrk. Parameters come from the environment:
--   RT_PATH      request path
--   RT_BODY      file with the body template; @ROW@ becomes fresh random values per request,
--                @LEN@ their count (for variable-length rows); without @ROW@ the body is constant
--   RT_MIN, RT_MAX   value range of random values; RT_LEN_MIN, RT_LEN_MAX   row length range
--   RT_AUTH      optional bearer token
--   RT_BINARY_HEADER_LEN   the body is an OIP binary-extension request (a JSON header this long, then the
--                tensor's bytes); its first FP32 value becomes a fresh random one per request
--   RT_RATE, RT_CONNS   open loop: hold RT_RATE requests/s in total over RT_CONNS connections, with
--                exponential gaps (Poisson arrivals); keep the per-connection gap well above the
--                latency so a slow answer rarely delays the next send
-- `done` prints one JSON line with wrk's latency percentiles (HDR histogram, microseconds).

local path = os.getenv("RT_PATH")
local template = io.open(os.getenv("RT_BODY")):read("*a")
local lo, hi = tonumber(os.getenv("RT_MIN") or "0"), tonumber(os.getenv("RT_MAX") or "16")
local len_lo, len_hi = tonumber(os.getenv("RT_LEN_MIN") or "64"), tonumber(os.getenv("RT_LEN_MAX") or "64")
local headers = { ["Content-Type"] = "application/json" }
if os.getenv("RT_AUTH") then headers["Authorization"] = "Bearer " .. os.getenv("RT_AUTH") end
local binary_at = tonumber(os.getenv("RT_BINARY_HEADER_LEN") or "0")
local head, tail = nil, nil
if binary_at > 0 then
  headers["Content-Type"] = "application/octet-stream"
  headers["Inference-Header-Content-Length"] = tostring(binary_at)
  head, tail = template:sub(1, binary_at), template:sub(binary_at + 5)
end
local dynamic = binary_at > 0 or template:find("@ROW@", 1, true) ~= nil
local static_request = nil
local rate, conns = tonumber(os.getenv("RT_RATE") or "0"), tonumber(os.getenv("RT_CONNS") or "1")
local mean_gap_ms = rate > 0 and conns / rate * 1000 or 0

if rate > 0 then
  function delay()
    return math.floor(-math.log(1 - math.random()) * mean_gap_ms)
  end
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  if not dynamic then static_request = wrk.format("POST", path, headers, template) end
end

function request()
  if not dynamic then return static_request end
  if binary_at > 0 then  -- little-endian FP32 in [0.5, 1): 2^23 values, so every input is new to the cache
    local first = string.char(math.random(0, 255), math.random(0, 255), math.random(0, 127), 0x3f)
    return wrk.format("POST", path, headers, head .. first .. tail)
  end
  local n = math.random(len_lo, len_hi)
  local values = {}
  for i = 1, n do values[i] = math.random(lo, hi) end
  local body = template:gsub("@LEN@", tostring(n)):gsub("@ROW@", table.concat(values, ","))
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n@@RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
