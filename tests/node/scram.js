// kafkajs (its own implementation of the protocol) over SASL/SCRAM.
//
//   node scram.js BOOTSTRAP MECHANISM USER PASSWORD TOPIC COUNT
//
// Produces COUNT keyed records to TOPIC, reads them back in a consumer
// group, commits, and prints one JSON line: {"produced": n, "consumed":
// [[key, value], ...]}. A failed login prints {"error": NAME, "message":
// ...} and exits 2; any other failure exits 1.
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [bootstrap, mechanism, username, password, topic, count] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'strata-kafkajs',
    brokers: [bootstrap],
    sasl: { mechanism, username, password },
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 3 },
    logLevel: logLevel.NOTHING,
  });
  const n = Number(count);
  const producer = kafka.producer();
  try {
    await producer.connect();
  } catch (e) {
    console.log(JSON.stringify({ error: e.name, message: e.message }));
    process.exit(2);
  }
  const messages = [];
  for (let i = 0; i < n; i++) messages.push({ key: `k${i}`, value: `v${i}` });
  await producer.send({ topic, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `kafkajs-${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${consumed.length} of ${n} records`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        consumed.push([message.key.toString(), message.value.toString()]);
        if (consumed.length >= n) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  console.log(JSON.stringify({ produced: n, consumed }));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
