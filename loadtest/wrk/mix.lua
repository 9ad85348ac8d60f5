-- The company's mix for wrk: 75% GET /api/info, 15% GET /api/buy/{cheap item}, 10% POST
-- /api/sendCoin of 1..25 coins to another employee, each request as a random seeded employee.
--
-- The employees and their tokens come from the files `ledger seed --out-users --out-tokens`
-- writes, named by the environment: MIX_USERS and MIX_TOKENS. MIX_SEED (default 1) seeds the
-- random choices; each thread draws its own sequence from it. MIX_RESULT, when set, names a
-- file that done() writes the counts and the p99 to, as JSON, for the load tool's `--wrk` mode.
--
-- Every answer is counted by status. A 400 "not enough coin" to a buy or a sendCoin is the
-- workload's expected refusal; any other status but 2xx, and every socket error, is an error.
--
--   MIX_USERS=users.json MIX_TOKENS=tokens.json wrk -t2 -c64 -d30s --latency -s mix.lua http://127.0.0.1:8080

local items = { "cup", "book", "pen", "socks", "wallet" } -- cheap items of the catalog

local threads = {}

function setup(thread)
	thread:set("id", #threads + 1)
	table.insert(threads, thread)
end

local function slurp(variable)
	local path = os.getenv(variable) or error(variable .. " must name a file of `ledger seed`")
	local f = assert(io.open(path, "r"))
	local s = f:read("*a")
	f:close()
	return s
end

local users, bearers = {}, {}

function init(args)
	-- The files hold flat JSON arrays: [{"username": "...", "password": "..."}, ...] and
	-- ["token", ...], in the same order.
	for name in slurp("MIX_USERS"):gmatch('"username"%s*:%s*"([^"]*)"') do
		users[#users + 1] = name
	end
	for token in slurp("MIX_TOKENS"):gmatch('"([^"]+)"') do
		bearers[#bearers + 1] = "Bearer " .. token
	end
	if #users < 2 or #users ~= #bearers then
		error(string.format("%d employees and %d tokens: want the same number, at least 2", #users, #bearers))
	end
	math.randomseed((tonumber(os.getenv("MIX_SEED")) or 1) * 1000003 + id)
	statuses = {} -- globals, for done() to collect through thread:get
	not_enough_coin = 0
end

function request()
	local x, user = math.random(), math.random(#users)
	local headers = { Authorization = bearers[user] }
	if x < 0.75 then
		return wrk.format("GET", "/api/info", headers)
	elseif x < 0.90 then
		return wrk.format("GET", "/api/buy/" .. items[math.random(#items)], headers)
	end
	local to = math.random(#users - 1) -- anyone but the sender
	if to >= user then
		to = to + 1
	end
	headers["Content-Type"] = "application/json"
	return wrk.format("POST", "/api/sendCoin", headers,
		string.format('{"toUser":"%s","amount":%d}', users[to], math.random(25)))
end

function response(status, headers, body)
	statuses[status] = (statuses[status] or 0) + 1
	if status == 400 and body:find("not enough coin", 1, true) then
		not_enough_coin = not_enough_coin + 1
	end
end

function done(summary, latency, requests)
	local by, refused = {}, 0
	for _, t in ipairs(threads) do
		for status, n in pairs(t:get("statuses")) do
			by[status] = (by[status] or 0) + n
		end
		refused = refused + t:get("not_enough_coin")
	end
	local codes = {}
	for status in pairs(by) do
		codes[#codes + 1] = status
	end
	table.sort(codes)

	local e = summary.errors
	local socket = e.connect + e.read + e.write + e.timeout
	local errors = socket
	io.write("status codes:\n")
	for _, status in ipairs(codes) do
		local n, note = by[status], ""
		if status == 400 then
			note = string.format(" (%d not enough coin)", refused)
			errors = errors + n - refused
		elseif status < 200 or status > 299 then
			note = " (errors)"
			errors = errors + n
		end
		io.write(string.format("  %d: %d%s\n", status, n, note))
	end
	io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n", e.connect, e.read, e.write, e.timeout))
	io.write(string.format("errors: %d of %d requests\n", errors, summary.requests))

	local out = os.getenv("MIX_RESULT")
	if out and out ~= "" then
		local parts = {}
		for _, status in ipairs(codes) do
			parts[#parts + 1] = string.format('"%d":%d', status, by[status])
		end
		local f = assert(io.open(out, "w"))
		f:write(string.format(
			'{"requests":%d,"duration_us":%d,"errors":%d,"not_enough_coin":%d,"p50_us":%d,"p99_us":%d,"statuses":{%s}}\n',
			summary.requests, summary.duration, errors, refused, latency:percentile(50), latency:percentile(99),
			table.concat(parts, ",")))
		f:close()
	end
end
