// One Kafka client operation per run, for tests/external_clients.py: Apache Kafka's own Java
// client (kafka-clients) against a broker. The same commands and output as ../node/probe.js:
//
//   produce BOOTSTRAP TOPIC KEYHEX:VALUEHEX...   (acks=all, partition 0)
//   consume BOOTSTRAP TOPIC OFFSET COUNT          (assign + seek, no group)
//   group BOOTSTRAP GROUP TOPIC COUNT             (subscribe, read, commit, leave)
//
// Consumed records are printed one a line as "OFFSET KEYHEX VALUEHEX" ("-" for null).

import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class ClientProbe {
    private static final HexFormat HEX = HexFormat.of();
    private static final Duration DEADLINE = Duration.ofSeconds(60);

    private static byte[] unhex(String text) {
        return text.equals("-") ? null : HEX.parseHex(text);
    }

    private static String hex(byte[] bytes) {
        return bytes == null ? "-" : HEX.formatHex(bytes);
    }

    private static void produce(String bootstrap, String topic, List<String> records)
            throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("acks", "all");
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(
                props, new ByteArraySerializer(), new ByteArraySerializer())) {
            for (String record : records) {
                String[] parts = record.split(":", -1);
                producer.send(new ProducerRecord<>(topic, 0, unhex(parts[0]), unhex(parts[1])))
                        .get();
            }
        }
    }

    private static KafkaConsumer<byte[], byte[]> consumer(String bootstrap, String group) {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        if (group != null) {
            props.put("group.id", group);
        }
        return new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    /** Polls until count records arrived, printing them; returns the next offset to read. */
    private static long read(KafkaConsumer<byte[], byte[]> consumer, int count) {
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        int seen = 0;
        long next = -1;
        while (seen < count) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("read " + seen + " of " + count + " records");
            }
            for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                if (seen < count) {
                    System.out.println(r.offset() + " " + hex(r.key()) + " " + hex(r.value()));
                    seen += 1;
                    next = r.offset() + 1;
                }
            }
        }
        return next;
    }

    public static void main(String[] args) throws Exception {
        String command = args[0];
        String bootstrap = args[1];
        switch (command) {
            case "produce" ->
                produce(bootstrap, args[2], List.of(args).subList(3, args.length));
            case "consume" -> {
                try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, null)) {
                    TopicPartition tp = new TopicPartition(args[2], 0);
                    c.assign(List.of(tp));
                    c.seek(tp, Long.parseLong(args[3]));
                    read(c, Integer.parseInt(args[4]));
                }
            }
            case "group" -> {
                try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, args[2])) {
                    c.subscribe(List.of(args[3]));
                    long next = read(c, Integer.parseInt(args[4]));
                    TopicPartition tp = new TopicPartition(args[3], 0);
                    c.commitSync(Map.of(tp, new OffsetAndMetadata(next)));
                }
            }
            default -> throw new IllegalArgumentException("unknown command " + command);
        }
    }
}
