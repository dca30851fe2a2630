import { main } from "../../kit/server.ts";
import { discountService } from "./service.ts";

await main(discountService);
