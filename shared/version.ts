/** The coder1 version, shown by `coder1 --version`, `/healthz` and bridges. */
export const VERSION = "0.3.0";
