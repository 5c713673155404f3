-- wrk: a client-credentials token request, authenticated with HTTP Basic.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("BENCH_BASIC")
wrk.body = "grant_type=client_credentials&scope=crm.contacts.read&resource=" .. os.getenv("BENCH_RESOURCE_ENCODED")

dofile("result.lua")
