/** The user ABI in one import: constants and name tables, errno values and errors, struct layouts. */

export * from './constants.ts';
export * from './errno.ts';
export * from './structs.ts';
