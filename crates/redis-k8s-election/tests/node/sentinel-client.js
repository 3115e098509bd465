// ioredis through the Sentinel-compatible endpoint: write `key` on the master (retrying while
// a failover runs), print the master's address. Arguments: host port password key.
const Redis = require("ioredis");
const [host, port, password, key] = process.argv.slice(2);
const r = new Redis({
  sentinels: [{ host, port: Number(port) }],
  name: "mymaster",
  password,
  connectTimeout: 1000,
  sentinelRetryStrategy: () => 100,
  retryStrategy: () => 100,
  maxRetriesPerRequest: 1,
});
r.on("error", () => {});
(async () => {
  const deadline = Date.now() + 60000;
  for (;;) {
    try {
      await r.set(key, "v-" + key);
      const role = await r.role();
      if (role[0] === "master") break;
    } catch (e) {
      if (Date.now() > deadline) {
        console.error(String(e));
        process.exit(1);
      }
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  console.log(`${r.stream.remoteAddress}:${r.stream.remotePort}`);
  r.disconnect();
})();
