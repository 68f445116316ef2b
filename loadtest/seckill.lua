-- wrk script: POST /seckill for random users of a population.
--   SECKILL_USERS  population size (default 1000000)
--   SECKILL_ITEM   item id (default "demo")
-- Prints per-status counts merged across wrk threads, latency percentiles and
-- one machine-readable line starting with "SUMMARY".

local users = tonumber(os.getenv("SECKILL_USERS") or "1000000")
local item = os.getenv("SECKILL_ITEM") or "demo"
local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   math.randomseed(os.time() * 1000 + id)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local user = math.random(1, users)
   return wrk.format(nil, "/seckill", nil,
      string.format('{"user_id":"u%d","item_id":"%s"}', user, item))
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   for _, t in ipairs(threads) do
      local s = t:get("statuses")
      for code, n in pairs(s or {}) do
         merged[code] = (merged[code] or 0) + n
      end
   end
   local codes = {}
   for code in pairs(merged) do table.insert(codes, code) end
   table.sort(codes)
   local parts = {}
   for _, code in ipairs(codes) do
      table.insert(parts, string.format("%d=%d", code, merged[code]))
   end
   local secs = summary.duration / 1e6
   io.write(string.format("SUMMARY rps=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f requests=%d " ..
                          "errors_connect=%d errors_read=%d errors_timeout=%d statuses=%s\n",
      summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      latency:percentile(99.9) / 1000, latency.max / 1000, summary.requests,
      summary.errors.connect, summary.errors.read, summary.errors.timeout,
      table.concat(parts, ",")))
end
