import { describe, expect, it } from "vitest";
import { pythonFloat } from "../../src/canonical.js";

// Expected strings are what CPython 3.11's repr() prints for each double (checked by hand in a Python shell).
const CASES: [number, string][] = [
  [34, "34.0"], [34.0522, "34.0522"], [-118.2637, "-118.2637"], [0, "0.0"], [-0, "-0.0"],
  [0.0001, "0.0001"], [0.00001, "1e-05"], [0.000012345, "1.2345e-05"], [1e15, "1000000000000000.0"],
  [1e16, "1e+16"], [1.5e16, "1.5e+16"], [123456789012345.6, "123456789012345.6"], [0.1 + 0.2, "0.30000000000000004"],
  [5e-324, "5e-324"], [1.7976931348623157e308, "1.7976931348623157e+308"], [-2.5e-7, "-2.5e-07"], [100, "100.0"],
  [9007199254740993, "9007199254740992.0"],
];

describe("pythonFloat", () => {
  it.each(CASES)("%s renders like Python repr", (x, want) => {
    expect(pythonFloat(x)).toBe(want);
  });

  it("refuses values canonical JSON cannot hold", () => {
    expect(() => pythonFloat(Number.NaN)).toThrow(RangeError);
    expect(() => pythonFloat(Infinity)).toThrow(RangeError);
  });
});
