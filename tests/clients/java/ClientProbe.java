// One Kafka client operation per run, for tests/external_clients.py: Apache Kafka's own Java
// client (kafka-clients) against a broker. The same commands and output as ../node/probe.js:
//
//   produce BOOTSTRAP TOPIC KEYHEX:VALUEHEX...   (acks=all, partition 0)
//   consume BOOTSTRAP TOPIC OFFSET COUNT          (assign + seek, no group)
//   group BOOTSTRAP GROUP TOPIC COUNT             (subscribe, read, commit, leave)
//   list BOOTSTRAP                                (Admin: "GROUP" a line)
//   describe BOOTSTRAP GROUP                      (Admin: "STATE MEMBERS")
//   delete BOOTSTRAP GROUP                        (Admin: "OK" or the error's class name)
//   delete-offsets BOOTSTRAP GROUP TOPIC          (Admin, partition 0: the same)
//
// Consumed records are printed one a line as "OFFSET KEYHEX VALUEHEX" ("-" for null).

import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.common.KafkaFuture;
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

    /** "OK", or the class name of the error the broker answered (its Kafka error code). */
    private static String outcome(KafkaFuture<Void> future) throws InterruptedException {
        try {
            future.get();
            return "OK";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        }
    }

    private static void administer(String command, String bootstrap, String[] args)
            throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(props)) {
            switch (command) {
                case "list" -> {
                    for (GroupListing g : admin.listGroups().all().get()) {
                        System.out.println(g.groupId());
                    }
                }
                case "describe" -> {
                    ConsumerGroupDescription d =
                        admin.describeConsumerGroups(List.of(args[2])).all().get().get(args[2]);
                    System.out.println(d.groupState() + " " + d.members().size());
                }
                case "delete" ->
                    System.out.println(outcome(admin.deleteConsumerGroups(List.of(args[2])).all()));
                default -> {
                    TopicPartition tp = new TopicPartition(args[3], 0);
                    System.out.println(
                        outcome(admin.deleteConsumerGroupOffsets(args[2], Set.of(tp)).all()));
                }
            }
        }
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
            case "list", "describe", "delete", "delete-offsets" ->
                administer(command, bootstrap, args);
            default -> throw new IllegalArgumentException("unknown command " + command);
        }
    }
}
