// kafkajs transactions (its own implementation of the protocol).
//
//   node txn.js BOOTSTRAP TOPIC TRANSACTIONAL_ID
//
// Commits a transaction of 20 records (c0..c19), aborts one of 20
// (a0..a19), commits one of 20 (d0..d19) that also commits offset 7 of
// partition 0 for group `<TOPIC>-txn-group` (sendOffsets), then reads the
// topic with a read_committed consumer (kafkajs' default) until 40 records
// arrive, and prints one JSON line: {"consumed": [value, ...]}. Any
// failure exits 1.
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [bootstrap, topic, transactionalId] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'strata-kafkajs-txn',
    brokers: [bootstrap],
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 8 },
    logLevel: logLevel.NOTHING,
  });
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const batch = (prefix) => {
    const messages = [];
    for (let i = 0; i < 20; i++) messages.push({ key: `k${i}`, value: `${prefix}${i}` });
    return messages;
  };
  let txn = await producer.transaction();
  await txn.send({ topic, messages: batch('c') });
  await txn.commit();
  txn = await producer.transaction();
  await txn.send({ topic, messages: batch('a') });
  await txn.abort();
  txn = await producer.transaction();
  await txn.send({ topic, messages: batch('d') });
  await txn.sendOffsets({
    consumerGroupId: `${topic}-txn-group`,
    topics: [{ topic, partitions: [{ partition: 0, offset: '7' }] }],
  });
  await txn.commit();
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `${topic}-reader` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${consumed.length} of 40 records`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        consumed.push(message.value.toString());
        if (consumed.length >= 40) {
          clearTimeout(timer);
          setTimeout(resolve, 1000);
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchOffsets({ groupId: `${topic}-txn-group`, topics: [topic] });
  await admin.disconnect();
  console.log(JSON.stringify({ consumed, offsets }));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
