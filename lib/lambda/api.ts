/** Lambda entry of the HTTP API: the configuration first (module order is evaluation order), then the handler. */
import './bundled-config.ts';

export { handler } from '../../functions/handlers/api.ts';
