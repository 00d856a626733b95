/** Lambda entry of `POST …/send`: the configuration first (module order is evaluation order), then the handler. */
import './bundled-config.ts';

export { handler } from '../../functions/handlers/send.ts';
