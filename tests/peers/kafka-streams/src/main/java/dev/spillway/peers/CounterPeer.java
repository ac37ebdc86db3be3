package dev.spillway.peers;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The Kafka Streams peer of spillway's counter: counts the counter-events topic (protobuf
 * JSON mapping of {@code spillway.v1.CounterEvent}, key {@code namespace/entity_id}) per key
 * with {@code groupByKey().reduce(sum of delta)} under {@code exactly_once_v2}, and writes
 * every changed count to an output topic.
 *
 * <p>"Exact" is judged where a downstream reader would judge it: a {@code read_committed}
 * consumer of the output topic keeps the latest count of each key; when their total equals
 * the expected sum, the counts are committed and visible. It prints to stdout, one line
 * each, {@code running}, {@code first <total>} (the first committed counts) and {@code exact
 * <total>}, then stops; {@code over <total>} and exit 1 if the counts ever add up to more.
 * The caller times the lines.
 *
 * <p>Arguments, as {@code key=value}: bootstrap, input, output, application-id, threads,
 * expected-sum, state-dir.
 */
public final class CounterPeer {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final String INCREMENT = "COUNTER_OPERATION_INCREMENT";
  private static final String STORE = "counts";

  private CounterPeer() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> options = parse(args);
    long expected = Long.parseLong(required(options, "expected-sum"));
    KafkaStreams streams = new KafkaStreams(topology(options), streamsConfig(options));
    streams.setUncaughtExceptionHandler(CounterPeer::fail);
    streams.setStateListener(
        (now, before) -> {
          if (now == KafkaStreams.State.RUNNING) {
            say("running");
          }
        });
    streams.start();
    try {
      waitForExactCounts(options, expected);
    } finally {
      streams.close(Duration.ofSeconds(10));
    }
  }

  /** input -> delta (increments only) -> sum per key -> output, every changed sum. */
  static Topology topology(Map<String, String> options) {
    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(required(options, "input"), Consumed.with(Serdes.String(), Serdes.String()))
        .mapValues(CounterPeer::incrementDelta)
        .filter((key, delta) -> delta != null)
        .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
        .reduce(
            Long::sum,
            Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(STORE)
                .withKeySerde(Serdes.String())
                .withValueSerde(Serdes.Long()))
        .toStream()
        .to(required(options, "output"), Produced.with(Serdes.String(), Serdes.Long()));
    return builder.build();
  }

  static Properties streamsConfig(Map<String, String> options) {
    Properties config = new Properties();
    config.put(StreamsConfig.APPLICATION_ID_CONFIG, required(options, "application-id"));
    config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(options, "bootstrap"));
    config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    config.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, required(options, "threads"));
    config.put(StreamsConfig.STATE_DIR_CONFIG, required(options, "state-dir"));
    config.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    return config;
  }

  /** The event's delta when it is an increment; null (dropped) for anything else. */
  static Long incrementDelta(String json) {
    try {
      JsonNode event = JSON.readTree(json);
      if (!INCREMENT.equals(event.path("operation").asText())) {
        return null;
      }
      // int64 travels as a JSON string in the protobuf JSON mapping; asLong reads both.
      return event.path("delta").asLong();
    } catch (IOException error) {
      return null;
    }
  }

  /** Reads the output topic read_committed until the latest counts add up to {@code expected}. */
  static void waitForExactCounts(Map<String, String> options, long expected) {
    String output = required(options, "output");
    try (KafkaConsumer<String, Long> reader = committedReader(options)) {
      List<TopicPartition> partitions =
          reader.partitionsFor(output).stream()
              .map(info -> new TopicPartition(output, info.partition()))
              .collect(Collectors.toList());
      reader.assign(partitions);
      reader.seekToBeginning(partitions);
      Map<String, Long> counts = new HashMap<>();
      long total = 0;
      boolean seenAny = false;
      while (total != expected) {
        for (ConsumerRecord<String, Long> record : reader.poll(Duration.ofMillis(100))) {
          Long before = counts.put(record.key(), record.value());
          total += record.value() - (before == null ? 0 : before);
        }
        if (total > expected) {
          // Counts only grow, so a total above the events is something counted twice.
          say("over " + total);
          System.exit(1);
        }
        if (!seenAny && total > 0) {
          seenAny = true;
          say("first " + total);
        }
      }
      say("exact " + total);
    }
  }

  static KafkaConsumer<String, Long> committedReader(Map<String, String> options) {
    Properties config = new Properties();
    config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, required(options, "bootstrap"));
    config.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    return new KafkaConsumer<>(config, new StringDeserializer(), new LongDeserializer());
  }

  static StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse fail(Throwable error) {
    say("error " + error);
    System.exit(1);
    return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_APPLICATION;
  }

  static void say(String line) {
    System.out.println(line);
    System.out.flush();
  }

  static Map<String, String> parse(String[] args) {
    Map<String, String> options = new HashMap<>();
    for (String arg : args) {
      int equals = arg.indexOf('=');
      if (equals < 1) {
        throw new IllegalArgumentException("expected key=value, got " + arg);
      }
      options.put(arg.substring(0, equals), arg.substring(equals + 1));
    }
    return options;
  }

  static String required(Map<String, String> options, String key) {
    String value = options.get(key);
    if (value == null) {
      throw new IllegalArgumentException("missing argument " + key + "=...");
    }
    return value;
  }
}
