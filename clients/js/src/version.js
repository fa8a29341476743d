// The module's version, in one place (a test checks that package.json says the same).
export const VERSION = '0.1.0';
