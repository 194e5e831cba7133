/** Run a CLI's `main(argv)`: its exit code, or "NAME: message" and exit 1 on an error (no stack trace for users). */
export function runMain(name: string, main: (argv: string[]) => Promise<number>): void {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`${name}: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}
