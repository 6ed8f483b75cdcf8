/**
 * Lines from standard input, one at a time, with whatever was typed ahead
 * kept for the next question (the pairing code and the SAS confirmation can
 * arrive in one read when stdin is a pipe).
 *
 * @module
 */

/** Longest line kept; anything longer is cut here. */
const MAX_LINE = 256;

/** Reads lines from a byte stream on demand. */
export class LineReader {
  #stream: ReadableStream<Uint8Array>;
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  #decoder = new TextDecoder();
  #buffer = "";
  #ended = false;
  #pending?: Promise<string | undefined>;

  /** @param stream The stream to read (default: stdin). */
  constructor(stream: ReadableStream<Uint8Array> = Deno.stdin.readable) {
    this.#stream = stream;
  }

  /**
   * The next line without its line ending, or undefined at end of input.
   * Concurrent callers share one read and get the same line.
   */
  next(): Promise<string | undefined> {
    this.#pending ??= this.#read().finally(() => (this.#pending = undefined));
    return this.#pending;
  }

  async #read(): Promise<string | undefined> {
    for (;;) {
      const nl = this.#buffer.search(/\r?\n|\r/);
      // A lone "\r" at the end may be the first half of "\r\n": wait for the rest.
      const split = nl === this.#buffer.length - 1 && this.#buffer.endsWith("\r") && !this.#ended;
      if (nl !== -1 && !split) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl).replace(/^(\r\n|\n|\r)/, "");
        return line.slice(0, MAX_LINE);
      }
      if (this.#ended || this.#buffer.length > MAX_LINE) {
        const rest = this.#buffer;
        this.#buffer = "";
        return rest === "" && this.#ended ? undefined : rest.slice(0, MAX_LINE);
      }
      this.#reader ??= this.#stream.getReader();
      const { value, done } = await this.#reader.read();
      if (done) this.#ended = true;
      else this.#buffer += this.#decoder.decode(value, { stream: true });
    }
  }

  /** Stops reading (lets the process exit while a read is pending). */
  cancel(): void {
    this.#reader?.cancel().catch(() => {});
  }
}
