/**
 * `CODER1_TELEMETRY`: one switch, read the same way by the relay (store no
 * telemetry at all) and the bridge (tell the relay to store nothing about it,
 * send no crash reports).
 *
 * @module
 */

/** The environment variable that turns telemetry off. */
export const TELEMETRY_ENV = "CODER1_TELEMETRY";

/**
 * Reads the telemetry switch.
 *
 * @param value The variable's value (undefined when unset).
 * @returns False for `false`, `0`, `no` or `off`; true when unset, empty, or
 *   `true`, `1`, `yes`, `on` (any case).
 * @throws {TypeError} For any other value, so a typo does not silently leave telemetry on.
 *
 * @example
 * ```ts
 * import { telemetryEnabled } from "./telemetry_setting.ts";
 * console.log(telemetryEnabled(undefined), telemetryEnabled("false"), telemetryEnabled("OFF")); // true false false
 * ```
 */
export function telemetryEnabled(value: string | undefined): boolean {
  const v = (value ?? "").trim().toLowerCase();
  if (v === "" || v === "true" || v === "1" || v === "yes" || v === "on") return true;
  if (v === "false" || v === "0" || v === "no" || v === "off") return false;
  throw new TypeError(`Cannot read ${TELEMETRY_ENV}="${value}": use true or false`);
}
