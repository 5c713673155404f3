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

dofile("result.lua")
