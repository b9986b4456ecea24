// Former module path of the Azure watcher, kept because agent/server.ts imports it from here.

export { AzureWatcher } from './azure-watcher.js';
