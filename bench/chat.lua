-- wrk script: POST a fixed chat completion; with RATE set (requests/s in total), each
-- connection paces itself so the whole run approximates that fixed rate.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("BENCH_KEY") or "bench-key"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key")
wrk.body = '{"model":"' .. (os.getenv("BENCH_MODEL") or "gpt-4o-mini") ..
    '","messages":[{"role":"user","content":"Summarise the quarterly report in one line."}]}'

local rate = tonumber(os.getenv("RATE") or "0")
local conns = tonumber(os.getenv("CONNS") or "1")

function delay()
    if rate <= 0 then
        return 0
    end
    return 1000 * conns / rate
end
