// TypeScript declarations for a Cap'n Web session with a farcall server.
// Generated from Rust by farcall: do not edit.

import type { RpcTarget } from "capnweb";

/**
 * The root the JavaScript tests call.
 */
export interface Api extends RpcTarget {
  add(a: number, b: number): Promise<number>;
  greet(name: string): Promise<string>;
  mirror(p: Point): Promise<Point>;
  sum(values: Array<number | bigint>): Promise<number | bigint>;
  reverse(words: Array<string>): Promise<Array<string>>;
  double(x?: number | bigint | null): Promise<number | bigint | null>;
  flip(data: Uint8Array): Promise<Uint8Array>;
  big(): Promise<number | bigint>;
  /**
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  div(a: number | bigint, b: number | bigint): Promise<number | bigint>;
  explode(): Promise<number | bigint>;
  counter(start: number | bigint): Promise<Counter>;
  /**
   * Calls `f` on 1 and on 2 and adds the results.
   */
  call_twice(f: (arg: number | bigint) => number | bigint | Promise<number | bigint>): Promise<number | bigint>;
  /**
   * Keeps `f` to call on `publish`; returns how many are kept.
   */
  subscribe(f: (arg: string) => void | Promise<void>): Promise<number | bigint>;
  publish(text: string): Promise<number | bigint>;
  unsubscribe_all(): Promise<number | bigint>;
  /**
   * A new team (see `Team`).
   */
  team(): Promise<Team>;
  /**
   * Calls `increment(10)` on a counter the caller implements.
   */
  use_counter(c: Counter): Promise<number | bigint>;
  /**
   * The tables of the connection this call came on.
   */
  stats(): Promise<Tables>;
  /**
   * HTTP batch requests served so far.
   */
  requests(): Promise<number | bigint>;
  /**
   * The numbers from 0 below `n`, as a stream.
   */
  count(n: number | bigint): Promise<ReadableStream<number | bigint>>;
  /**
   * The sum of the numbers the caller streams.
   *
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  total(numbers: ReadableStream<number | bigint>): Promise<number | bigint>;
  /**
   * `n` bytes (byte `i` is `i % 251`), in chunks of up to 64 KiB.
   */
  download(n: number | bigint): Promise<ReadableStream<Uint8Array>>;
  /**
   * How many bytes the caller streamed, and their sum modulo 2^32.
   *
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  upload(data: ReadableStream<Uint8Array>): Promise<[number | bigint, number]>;
  /**
   * The numbers from 0 on, without end, made as they are read.
   */
  ticks(): Promise<ReadableStream<number | bigint>>;
  /**
   * How many numbers the last `ticks` made so far.
   */
  produced(): Promise<number | bigint>;
  /**
   * Keeps the stream, unread, until `drain`.
   */
  hold(numbers: ReadableStream<number | bigint>): Promise<void>;
  /**
   * Reads the stream `hold` kept to its end: how many numbers it carried.
   *
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  drain(): Promise<number | bigint>;
  /**
   * Reads one number, then drops the stream.
   */
  first(numbers: ReadableStream<number | bigint>): Promise<number | bigint | null>;
  /**
   * A pair named "pair" with the numbers from 0 below `n`.
   */
  pair(n: number | bigint): Promise<Pair>;
  /**
   * Writes "line 0" to "line {n-1}" into the caller's `WritableStream`, pausing
   * now and then; returns how many lines it took (fewer if it failed).
   */
  fill(n: number | bigint, out: WritableStream<string>): Promise<number | bigint>;
  /**
   * A `WritableStream` of lines for the caller to write; `inbox_read` returns
   * what was written once it is closed.
   */
  inbox(): Promise<WritableStream<string>>;
  /**
   * The lines written to the last `inbox`, once closed; its error if it failed.
   *
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  inbox_read(): Promise<Array<string>>;
  /**
   * Writes `n` bytes (byte `i` is `i % 251`) into the caller's `WritableStream`
   * of `Uint8Array`s, then closes it.
   *
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  save(n: number | bigint, out: WritableStream<Uint8Array>): Promise<undefined>;
  /**
   * A `WritableStream` of `Uint8Array`s; `bytes_read` tells how many bytes were
   * written to the last one and their sum modulo 2^32, once it is closed.
   */
  bytes_inbox(): Promise<WritableStream<Uint8Array>>;
  /**
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  bytes_read(): Promise<[number | bigint, number]>;
  /**
   * `count(n)` of a backend: a farcall server on a connection of its own in
   * farcall's default codec, its stream passed on to the caller (a gateway).
   *
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  relayed(n: number | bigint): Promise<ReadableStream<number | bigint>>;
  /**
   * `total` of the caller's stream, computed by such a backend.
   *
   * Rejects with an `Error` carrying the text of the Rust error.
   */
  relayed_total(numbers: ReadableStream<number | bigint>): Promise<number | bigint>;
}

export type Point = { x: number, y: number, label: string | null, };

/**
 * A counter served to JavaScript.
 */
export interface Counter extends RpcTarget {
  increment(by: number | bigint): Promise<number | bigint>;
  value(): Promise<number | bigint>;
  /**
   * A new counter starting at this one's value plus one.
   */
  child(): Promise<Counter>;
}

/**
 * A struct of plain values, a nested struct and objects (the lead counting from
 * 1, the members from 2 and 3), for property paths on results:
 * `api.team().lead.increment(1)`, `await api.team().stats.label`.
 */
export type Team = { name: string, lead: Counter, stats: Point, members: Array<Counter>, };

/**
 * A connection's tables, as `farcall::Stats` reports them.
 */
export type Tables = { questions: number, 
/**
 * Not counting the `stats` call itself.
 */
answers: number, exports: number, imports: number, 
/**
 * Streams open on the connection.
 */
streams: number, };

/**
 * A name and a stream, for property paths reaching a stream:
 * `await api.pair(3).numbers`.
 */
export type Pair = { name: string, numbers: ReadableStream<number | bigint>, };
