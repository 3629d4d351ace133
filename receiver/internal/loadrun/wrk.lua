-- wrk script of `make load-receiver`: POST the body file (env LOADRUN_BODY) with a unique
-- call id spliced in per request at every marker (the call id and each detail id's start), and write the call id of every 2xx to
-- $LOADRUN_IDS.<thread> so `loadrun check` can prove each is in Redis.
local marker = "LOADRUN-CALL-ID"
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(os.getenv("LOADRUN_BODY"), "rb"))
  local b = f:read("*a")
  f:close()
  parts = {}
  local from = 1
  while true do
    local s, e = string.find(b, marker, from, true)
    if not s then break end
    table.insert(parts, string.sub(b, from, s - 1))
    from = e + 1
  end
  assert(#parts > 0, "body has no call-id marker")
  table.insert(parts, string.sub(b, from))
  prefix = "w" .. tostring(os.time()) .. "-" .. tid .. "-"
  out = assert(io.open(os.getenv("LOADRUN_IDS") .. "." .. tid, "w"))
  out:setvbuf("line")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json; charset=utf-8"
  wrk.headers["User-Agent"] = "MiiTel-Webhook/v1"
  local auth = os.getenv("LOADRUN_AUTH")
  if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, table.concat(parts, prefix .. counter))
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    local id = string.match(body, '"call_id":"([^"]+)"')
    if id then out:write(id, "\n") end
  end
end
