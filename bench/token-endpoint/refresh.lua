-- wrk: refresh-token rotation. Each request spends one refresh token from a pool (read from
-- BENCH_REFRESH_FILE, one per line) and its answer's new refresh token goes back into the pool,
-- so every connection follows live rotation chains; a failed request loses its chain.
local pool = {}
for line in io.lines(os.getenv("BENCH_REFRESH_FILE")) do
  if #line > 0 then pool[#pool + 1] = line end
end
local basic = os.getenv("BENCH_BASIC_RT")

request = function()
  local token = table.remove(pool) or "pool-exhausted"
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = basic,
  }, "grant_type=refresh_token&refresh_token=" .. token)
end

response = function(status, headers, body)
  local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if status == 200 and token then pool[#pool + 1] = token end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
