/**
 * The compressions a server answers with, at levels meant for dynamic answers.
 *
 * connect-node's defaults compress at zlib's defaults: gzip level 6 and brotli
 * quality 11, brotli's maximum, meant for static files compressed once. The
 * client picks the algorithm (the first of its Accept-Encoding that the server
 * has), so with the defaults any caller could make every answer cost brotli 11:
 * about 22 ms of CPU for a 15 KB search page on our machines, against 0.1 ms
 * for gzip. Here gzip is level 1 (nginx's default: 75 µs for that page, 5%
 * larger than level 6) and brotli quality 4 (0.2 ms, still smaller than gzip).
 * Decompression (of requests) is connect-node's own, with its size limit.
 *
 * Peers (kit/clients.ts) ask for no compression at all: their answers cross the
 * data centre's network, where the CPU costs more than the bytes.
 */
import { promisify } from "node:util";
import * as zlib from "node:zlib";
import type { Compression } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";

export const gzipLevel = 1;
export const brotliQuality = 4;
const gzipOptions = { level: gzipLevel };
const brotliOptions = { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: brotliQuality } };

const gzip = promisify(zlib.gzip);
const brotli = promisify(zlib.brotliCompress);
/**
 * Answers up to this size are compressed on the calling thread. zlib's asynchronous API costs
 * 150–200 µs of CPU per call whatever the size (the thread pool's hand-off and wake-ups), against
 * 30–50 µs for gzip 1 of 1.5–15 KB done synchronously; larger answers go to the thread pool so the
 * event loop is not held for milliseconds.
 */
export const syncCompressMaxBytes = 64 * 1024;
// zlib's Buffers sit on an ArrayBuffer (never a SharedArrayBuffer): what Connect's type asks, without a copy.
const bytesOf = (b: Buffer) => b as Uint8Array as Uint8Array<ArrayBuffer>;

const gzipFast: Compression = {
  name: compressionGzip.name,
  compress: async (bytes) => bytesOf(bytes.length <= syncCompressMaxBytes ? zlib.gzipSync(bytes, gzipOptions) : await gzip(bytes, gzipOptions)),
  decompress: (bytes, readMaxBytes) => compressionGzip.decompress(bytes, readMaxBytes),
};

const brotliFast: Compression = {
  name: compressionBrotli.name,
  compress: async (bytes) => bytesOf(bytes.length <= syncCompressMaxBytes ? zlib.brotliCompressSync(bytes, brotliOptions) : await brotli(bytes, brotliOptions)),
  decompress: (bytes, readMaxBytes) => compressionBrotli.decompress(bytes, readMaxBytes),
};

/**
 * Answers smaller than this are sent as they are (connect's default threshold is 1 KiB). Node's zlib
 * starts a new stream per answer: about 100–150 µs of CPU for a 3 KB GetProduct answer in the
 * profile of a server under load (gzip 1 of 3 KB alone: 37 µs), to save about 2 KB. An answer of
 * a few KB crosses the network in the first flight of packets either way (TCP's initial window is
 * about 14 KB), so below 4 KiB the CPU costs more than the bytes save.
 */
export const compressMinBytes = 4 * 1024;

/** What every service accepts and answers with (connectNodeAdapter's acceptCompression). */
export const serverCompressions: Compression[] = [gzipFast, brotliFast];
