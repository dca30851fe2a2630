import { main } from "../../kit/server.ts";
import { orderService } from "./service.ts";

await main(orderService);
