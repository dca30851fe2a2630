/** The client address rule alone: which X-Forwarded-For entry is trusted for a number of proxy hops. */
import { describe, expect, it } from "vitest";
import { clientAddress } from "./client-address.ts";

describe("clientAddress", () => {
  it("takes the entry `hops` places from the right, the TCP peer being place 0", () => {
    expect(clientAddress("203.0.113.9, 198.51.100.7", "10.0.0.2", 1)).toBe("198.51.100.7");
    expect(clientAddress("203.0.113.9, 198.51.100.7", "10.0.0.2", 2)).toBe("203.0.113.9");
    expect(clientAddress("203.0.113.9, 198.51.100.7", "10.0.0.2", 0)).toBe("10.0.0.2");
  });

  it("uses the furthest entry when there are fewer than hops, and the peer without the header", () => {
    expect(clientAddress("198.51.100.7", "10.0.0.2", 3)).toBe("198.51.100.7");
    expect(clientAddress(null, "10.0.0.2", 1)).toBe("10.0.0.2");
    expect(clientAddress("", "::ffff:10.0.0.2", 1)).toBe("10.0.0.2");
  });

  it("ignores what is not an IP, falling back towards the peer", () => {
    expect(clientAddress("unknown", "10.0.0.2", 1)).toBe("10.0.0.2");
    expect(clientAddress("198.51.100.7, 1.2.3.4:80", "10.0.0.2", 2)).toBe("198.51.100.7");
    expect(clientAddress("198.51.100.7, garbage", "10.0.0.2", 1)).toBe("10.0.0.2");
    expect(clientAddress(" 2001:DB8::1 ", undefined, 1)).toBe("2001:db8::1");
    expect(clientAddress("unknown", undefined, 1)).toBe("");
  });
});
