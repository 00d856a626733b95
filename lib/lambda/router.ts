/** Lambda entry of the router: the configuration first (module order is evaluation order), then the handler. */
import './bundled-config.ts';

export { handler } from '../../functions/handlers/router.ts';
