/** Lambda entry of the retention sweep: the configuration first (module order is evaluation order), then the handler. */
import './bundled-config.ts';

export { handler } from '../../functions/handlers/retention.ts';
