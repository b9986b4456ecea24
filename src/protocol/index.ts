// The wire contract in one import.
export * from './errors.js';
export * from './version.js';
export * from './frames.js';
export * from './codec.js';
export * from './define.js';
export * from './messages.js';
export * from './auth.js';
export * from './pages.js';
