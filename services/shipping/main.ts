import { main } from "../../kit/server.ts";
import { shippingService } from "./service.ts";

await main(shippingService);
