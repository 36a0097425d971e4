// @platformatic/kafka against a broker: produce, read from a middle offset, commit in a group
// and resume from the commit. Prints one JSON line for tests/test_platformatic_client.py.
// Usage: node platformatic.mjs <bootstrap> <topic> <group> [resume]
// With "resume" it only resumes the group from its commit (after the test restarted the broker).
import { Consumer, Producer, stringDeserializers, stringSerializers } from '@platformatic/kafka'

const [bootstrap, topic, group, phase] = process.argv.slice(2)
const COUNT = 100
const MIDDLE = 40
const COMMITTED = 10
const base = { clientId: 'logbench', bootstrapBrokers: [bootstrap], timeout: 10000 }

async function read (consumer, options, count) {
  const stream = await consumer.consume({ topics: [topic], autocommit: false, ...options })
  const seen = []
  for await (const message of stream) {
    seen.push(message)
    if (seen.length === count) break
  }
  await stream.close()
  return seen
}

const plain = m => ({
  offset: Number(m.offset), key: m.key, value: m.value, header: m.headers.get('n') ?? null
})

async function resume () {
  const again = new Consumer({ ...base, groupId: group, deserializers: stringDeserializers, sessionTimeout: 6000, heartbeatInterval: 500 })
  const resumed = await read(again, { mode: 'committed', fallbackMode: 'earliest' }, 1)
  await again.close()
  return resumed.map(plain)
}

if (phase === 'resume') {
  console.log(JSON.stringify({ resumed: await resume() }))
  process.exit(0)
}

const producer = new Producer({ ...base, serializers: stringSerializers })
const messages = []
for (let i = 0; i < COUNT; i++) {
  messages.push({ topic, partition: 0, key: `k${i}`, value: `v${i}`.repeat(i % 7), headers: { n: `${i}` } })
}
await producer.send({ messages, acks: -1 })
await producer.close()

const reader = new Consumer({ ...base, groupId: `${group}-reader`, deserializers: stringDeserializers })
const middle = await read(reader, { mode: 'manual', offsets: [{ topic, partition: 0, offset: BigInt(MIDDLE) }] }, COUNT - MIDDLE)
await reader.close(true)

const member = new Consumer({ ...base, groupId: group, deserializers: stringDeserializers, sessionTimeout: 6000, heartbeatInterval: 500 })
const first = await read(member, { mode: 'committed', fallbackMode: 'earliest' }, COMMITTED)
await first[first.length - 1].commit()
await member.close()

console.log(JSON.stringify({ middle: middle.map(plain), first: first.map(plain), resumed: await resume() }))
