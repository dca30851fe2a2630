import { main } from "../../kit/server.ts";
import { cartService } from "./service.ts";

await main(cartService);
