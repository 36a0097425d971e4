// One Kafka client operation per run, for tests/external_clients.py: kafkajs against a broker.
//
//   node probe.js produce BOOTSTRAP TOPIC KEYHEX:VALUEHEX...   (acks=all, one partition: 0)
//   node probe.js consume BOOTSTRAP TOPIC OFFSET COUNT          (no group: assign + seek)
//   node probe.js group BOOTSTRAP GROUP TOPIC COUNT             (subscribe, read, commit, leave)
//   node probe.js reset BOOTSTRAP GROUP TOPIC                   (admin.resetOffsets, earliest)
//   node probe.js list BOOTSTRAP                                (admin: "GROUP" a line)
//   node probe.js describe BOOTSTRAP GROUP                      (admin: "STATE MEMBERS")
//   node probe.js delete BOOTSTRAP GROUP                        (admin: "OK" or the error's type)
//
// Consumed records are printed one a line as "OFFSET KEYHEX VALUEHEX" ("-" for null), so
// binary keys and values cross the process boundary unchanged.
"use strict";
const { Kafka, logLevel } = require("kafkajs");

const hex = (buf) => (buf === null ? "-" : buf.toString("hex"));
const unhex = (text) => (text === "-" ? null : Buffer.from(text, "hex"));

async function produce(kafka, topic, records) {
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = records.map((r) => {
    const [key, value] = r.split(":");
    return { key: unhex(key), value: unhex(value), partition: 0 };
  });
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();
}

// Reads until `count` records arrived, printing them; commits the position after the last
// one when `commit` is set.
async function readInto(consumer, count, commit) {
  let seen = 0;
  await new Promise((resolve, reject) => {
    consumer
      .run({
        autoCommit: false,
        eachMessage: async ({ topic, partition, message }) => {
          if (seen >= count) return;
          console.log(`${message.offset} ${hex(message.key)} ${hex(message.value)}`);
          seen += 1;
          if (seen === count) {
            if (commit) {
              const next = (BigInt(message.offset) + 1n).toString();
              await consumer.commitOffsets([{ topic, partition, offset: next }]);
            }
            resolve();
          }
        },
      })
      .catch(reject);
  });
}

async function consume(kafka, topic, offset, count) {
  // kafkajs has no consumer without a group: a throwaway group that never commits is the
  // closest.
  const consumer = kafka.consumer({ groupId: `probe-${process.pid}-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topic });
  const run = readInto(consumer, count, false);
  consumer.seek({ topic, partition: 0, offset: String(offset) });
  await run;
  await consumer.disconnect();
}

async function group(kafka, groupId, topic, count) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, rebalanceTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await readInto(consumer, count, true);
  await consumer.disconnect();
}

async function reset(kafka, groupId, topic) {
  const admin = kafka.admin();
  await admin.connect();
  await admin.resetOffsets({ groupId, topic, earliest: true });
  await admin.disconnect();
}

// The admin commands print what they found; an error the broker answered is printed too
// (its type name), so the test sees Kafka's error code as the client names it.
async function administer(kafka, command, args) {
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (command === "list") {
      const { groups } = await admin.listGroups();
      for (const group of groups) console.log(group.groupId);
    } else if (command === "describe") {
      const { groups } = await admin.describeGroups([args[0]]);
      console.log(`${groups[0].state} ${groups[0].members.length}`);
    } else {
      try {
        await admin.deleteGroups([args[0]]);
        console.log("OK");
      } catch (error) {
        console.log(error.groups ? error.groups[0].error.type : error.name);
      }
    }
  } finally {
    await admin.disconnect();
  }
}

async function main() {
  const [command, bootstrap, ...args] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: "logbench-kafkajs",
    brokers: [bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 5 },
  });
  if (command === "produce") await produce(kafka, args[0], args.slice(1));
  else if (command === "consume") await consume(kafka, args[0], Number(args[1]), Number(args[2]));
  else if (command === "group") await group(kafka, args[0], args[1], Number(args[2]));
  else if (command === "reset") await reset(kafka, args[0], args[1]);
  else if (["list", "describe", "delete"].includes(command)) await administer(kafka, command, args);
  else throw new Error(`unknown command ${command}`);
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
