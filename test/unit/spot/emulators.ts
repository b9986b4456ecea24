// The metadata emulators in one import (the integration spot test loads AwsEmulator from here).

export { AwsEmulator } from './aws-emulator.js';
export { AzureEmulator, type AzureEvent } from './azure-emulator.js';
export { GcpEmulator } from './gcp-emulator.js';
export { HttpEmulator, type RecordedRequest } from './http-emulator.js';
