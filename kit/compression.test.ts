/**
 * The servers' compressions on both sides of syncCompressMaxBytes: the same bytes as zlib's
 * at the kit's levels, whether compressed on the calling thread or in the thread pool, and
 * read back by connect's decompression. (A whole answer through a server: services/product/search.test.ts.)
 */
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { brotliQuality, gzipLevel, serverCompressions, syncCompressMaxBytes } from "./compression.ts";

const text = (bytes: number) => Buffer.from(Array.from({ length: bytes }, (_, i) => String.fromCharCode(97 + ((i * 7919) % 26))).join(""));
const [gzip, brotli] = serverCompressions;

describe("serverCompressions", () => {
  for (const size of [2_000, syncCompressMaxBytes, syncCompressMaxBytes + 1, 3 * syncCompressMaxBytes]) {
    it(`gzip ${gzipLevel} and brotli ${brotliQuality} of ${size} bytes, and back`, async () => {
      const plain = text(size);
      const gz = await gzip!.compress(plain);
      expect(Buffer.from(gz)).toEqual(gzipSync(plain, { level: gzipLevel }));
      expect(Buffer.from(await gzip!.decompress(gz, 10 * size))).toEqual(plain);
      const br = await brotli!.compress(plain);
      expect(Buffer.from(br)).toEqual(brotliCompressSync(plain, { params: { [constants.BROTLI_PARAM_QUALITY]: brotliQuality } }));
      expect(Buffer.from(await brotli!.decompress(br, 10 * size))).toEqual(plain);
    });
  }

  it("refuses a request that decompresses beyond the limit", async () => {
    const bomb = await gzip!.compress(Buffer.alloc(1_000_000));
    await expect(gzip!.decompress(bomb, 1_000)).rejects.toThrow(/larger than configured readMaxBytes/);
  });
});
