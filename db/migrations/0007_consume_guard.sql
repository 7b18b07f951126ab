-- 0007_consume_guard: a message that kills the worker every time it is
-- applied must not take its partition down forever (TESTPLAN "a message
-- that crashes the worker every time").
--
-- consumer_inflight: before a worker decodes a batch it records, per
-- partition, the range of offsets the batch holds, in a transaction of its
-- own committed without waiting for the disk (a worker's death, not the
-- server's, is what this guards against). The transaction that applies
-- messages releases them, whichever worker's range they are in. A worker
-- that gives a batch up alive (its partition revoked, its drain deadline
-- passed) deletes its own rows. So a range still here when a worker is
-- assigned the partition means a worker died in the middle of it.
--
-- consumer_suspects: the new owner applies those ranges one message at a
-- time, and before each one it writes its own row here. Every row of
-- another worker is a worker that began the message on its own and did
-- not finish it: a death. A worker that gives the message up alive deletes
-- its row; applying the message deletes them all. A message with more than
-- consumer.crash_attempts such deaths is not decoded or applied again: it
-- becomes a dead letter with reason crashed_worker, and the partition moves
-- on.
--
-- `worker` is a random id per process, so a restarted process is another
-- worker, and a retry after a commit in doubt finds its own row.
-- Both tables are keyed by consumer group: another group reading the same
-- topic has its own positions and its own crashes.
CREATE TABLE consumer_inflight (
  group_id      text     NOT NULL,
  topic         text     NOT NULL,
  partition     integer  NOT NULL,
  worker        text     NOT NULL,
  first_offset  bigint   NOT NULL,  -- the first offset not released yet
  last_offset   bigint   NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition, worker)
);

CREATE TABLE consumer_suspects (
  group_id    text     NOT NULL,
  topic       text     NOT NULL,
  partition   integer  NOT NULL,
  "offset"    bigint   NOT NULL,
  worker      text     NOT NULL,
  began_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition, "offset", worker)
);

-- A message dead-lettered as crashed_worker is redelivered until Kafka has
-- the offsets past it: the guard looks its position up before decoding
-- anything, and must not decode it again.
CREATE INDEX dead_letters_crashed_idx ON dead_letters (topic, partition, "offset")
  WHERE reason = 'crashed_worker' AND replayed_at IS NULL;
